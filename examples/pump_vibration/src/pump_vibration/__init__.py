"""A ready-made ONNX model for inferline: a pump's state from the vibration energy in 16 frequency bands."""
