"""The exception family of edge-mm (torch-free).

Every error a user can cause derives from EdgeMMError. Its message is one line that says what is
wrong and what to do about it; command-line tools print it and exit with status 2.
"""


class EdgeMMError(Exception):
    """Root of every error edge-mm raises on purpose."""

    exit_code = 2


class UsageError(EdgeMMError):
    """Bad command-line arguments, option values or configuration files."""


class InputError(EdgeMMError):
    """Arrays or images of the wrong shape, dtype, size or value range."""


class WeightsError(EdgeMMError):
    """A checkpoint that cannot be read, or whose keys or shapes do not match the model."""


class DownloadError(EdgeMMError):
    """A download that failed, or whose checksum did not match."""


class TrainingError(EdgeMMError):
    """A training run that cannot go on (diverged loss, a resume that does not match its run)."""


class DatasetError(EdgeMMError):
    """A dataset folder with missing, extra or unreadable files."""


class ArtifactError(EdgeMMError):
    """A missing, corrupt or mismatched artifact (ONNX file, engine, spec, report)."""


class ExportError(EdgeMMError):
    """An export stage (ONNX, precision variant, parity check) that failed."""


class CalibrationError(EdgeMMError):
    """A calibration set that is missing, corrupt or made for another spec."""


class EngineError(EdgeMMError):
    """A TensorRT engine that cannot be built, loaded or run here."""


class BackendError(EdgeMMError):
    """An inference backend that is unavailable or failed."""


class SourceError(EdgeMMError):
    """A camera, recording, folder or other frame source that cannot be opened or read."""


class CameraError(SourceError):
    """A RealSense camera that is absent, unreachable or was unplugged."""


class IndexStoreError(EdgeMMError):
    """A retrieval index that is missing, corrupt, or made by another model."""


class CardError(EdgeMMError):
    """A model card (export.import_onnx) that is malformed or contradicts its ONNX graph."""
