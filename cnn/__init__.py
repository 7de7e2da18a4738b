"""Video CNN baselines: X3D-S from pytorchvideo with a regression head."""

from cnn.x3d import (
    DEFAULT_TARGETS,
    X3D_S_CONFIG,
    CheckpointError,
    CheckpointLoad,
    build_x3d_s,
    count_parameters,
    import_pytorchvideo,
    load_checkpoint,
)

__all__ = [
    "DEFAULT_TARGETS",
    "X3D_S_CONFIG",
    "CheckpointError",
    "CheckpointLoad",
    "build_x3d_s",
    "count_parameters",
    "import_pytorchvideo",
    "load_checkpoint",
]
