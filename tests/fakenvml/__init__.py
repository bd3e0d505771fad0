"""A fake `libnvidia-ml.so.1` for tests: real pynvml, real ctypes loading, hardware from a config file."""
