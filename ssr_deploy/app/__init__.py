"""The applications built on the library: the end-to-end demo and its report, and the
genotype reports `ssr-deploy info` prints. Nothing below imports from here."""
