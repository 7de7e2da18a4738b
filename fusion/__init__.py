"""PulmoFusion models: SNN classifier, X3D-S regressor and metadata fusion, trained with subject-wise k-fold
cross-validation (``python -m fusion train | evaluate | predict``)."""
