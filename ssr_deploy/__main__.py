from ssr_deploy.cli import main

main()
