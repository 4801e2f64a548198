"""How large what a user gives may be: one definition, read by the CLI, the sidecar checks
and the image reader alike."""

#: pixels a side: frames, model inputs and engine profiles up to 8K (a larger side is a typo,
#: and tens of GB of activations); a file's header is read first, so a small file declaring a
#: huge image is refused before it is decoded
MAX_SIDE = 8192
#: images in one batch
MAX_BATCH = 1024
