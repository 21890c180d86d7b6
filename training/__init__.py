"""Training code for cv2_learned (PyTorch). Never imported by the runtime package."""
