"""The one exception type users see: a message that names the problem and the fix."""


class SsrDeployError(Exception):
    """A user mistake or an environment problem; the CLI prints it as one line."""


class GenotypeError(SsrDeployError, ValueError):
    """A genotype file or dict that does not describe a valid network."""


class SpecError(SsrDeployError, ValueError):
    """A model sidecar (ModelSpec) that is missing a field or holds a wrong value."""


class UsageError(SsrDeployError, ValueError):
    """A bad argument to the public API or the CLI: ``except ValueError`` catches it too."""


class UsageTypeError(SsrDeployError, TypeError):
    """An argument of the wrong kind (an unknown option, a frame that is not an array)."""


class PrecisionCheckError(SsrDeployError):
    """A converted (fp16/int8) graph whose labels agree with fp32 below the threshold."""
