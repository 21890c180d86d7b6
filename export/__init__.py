"""Export of trained PyTorch checkpoints to the ONNX model files of docs/ARCHITECTURE.md."""
