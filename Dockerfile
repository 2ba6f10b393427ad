# cifar-onnx: the web service on ONNX Runtime. The runtime only: no torch in this image.
# Build: docker build -t cifar-onnx .   Run: docker run -p 8000:8000 cifar-onnx

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY web ./web
COPY model ./model
# Install the project (its pinned ranges come from pyproject.toml), then prove torch is absent.
# hadolint ignore=DL3013
RUN /opt/venv/bin/pip install . \
 && /opt/venv/bin/python -c "import importlib.util, sys; sys.exit('torch found' if importlib.util.find_spec('torch') else 0)"

FROM python:3.11-slim
COPY --from=build /opt/venv /opt/venv
# Served models live in /models: mount a folder there to add models without rebuilding.
COPY model /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CIFAR_ONNX_HOST=0.0.0.0 \
    CIFAR_ONNX_PORT=8000 \
    CIFAR_ONNX_MODEL_DIR=/models \
    CIFAR_ONNX_WORKERS=1 \
    CIFAR_ONNX_INTRA_OP_THREADS=1
# A numeric non-root user: nothing runs as root, and no user database is needed.
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=4s --start-period=15s --retries=3 CMD ["cifar-onnx", "health"]
# `cifar-onnx serve` runs uvicorn with the CIFAR_ONNX_* settings above.
CMD ["cifar-onnx", "serve"]
