"""The TensorRT backend, laid out like Polygraphy's backend/trt (tensorrt and cuda-python imported lazily).

flavours.py   which TensorRT is installed: tensorrt 10.x/11.x, tensorrt_rtx (a variant of the
              builder config, not a copy), or trtexec; capabilities as properties
builder.py    ONNX -> engine + sidecar (strong typing, builder flags on 10.x, RTX targets,
              DLA, timing cache; one retry with a narrower profile after out-of-memory)
profile.py    optimization-profile shapes from the ONNX inputs and the spec
calibrator.py the legacy INT8 calibrator (TensorRT 10.x only, only when asked)
trtexec.py    the same settings as trtexec flags (JetPack without the Python bindings)
engines.py    an artifact's engines: can this machine build, build all, build on first run
loader.py     module, runtime and deserialization; which engine runs on this machine
runner.py     TensorRTBackend: activate / infer / deactivate on cuda-python buffers
cuda.py       the cuda-python glue (device info, pinned/device buffers, streams, CUDA graphs)
logger.py     TensorRT's logger and build progress bars
"""
