# One image for the operator and every freshrank service: `freshrank <role>`
# (operator, feature, trainer, ranking). Triton runs NVIDIA's own image.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# torch first, from the CPU wheel index: anything resolving torch later finds it satisfied
# instead of pulling the multi-GB CUDA build. (GPU trainers use a CUDA base image variant.)
RUN python -m venv /opt/freshrank \
 && /opt/freshrank/bin/pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY pyproject.toml requirements.lock README.md* ./
COPY protos ./protos
COPY services ./services
COPY operator ./operator

# Generated protobuf code is built here, never copied from a checkout.
RUN /opt/freshrank/bin/pip install grpcio-tools==1.81.1 \
 && /opt/freshrank/bin/python -m grpc_tools.protoc -I protos --python_out=services \
      protos/freshrank/v1/*.proto \
 && touch services/freshrank/v1/__init__.py \
 && /opt/freshrank/bin/pip uninstall -y grpcio-tools \
 && /opt/freshrank/bin/pip install -c requirements.lock .

FROM python:3.11-slim

COPY --from=build /opt/freshrank /opt/freshrank
COPY crds /opt/freshrank/crds
ENV PATH=/opt/freshrank/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FRESHRANK_CRD_PATH=/opt/freshrank/crds/recommenderdeployments.freshrank.io.yaml

# Numeric user and group: Pod Security "restricted" (runAsNonRoot) can verify only a number,
# and the operator's pods write their volumes as this group (fsGroup 10001).
RUN groupadd --gid 10001 freshrank \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin freshrank
USER 10001:10001
WORKDIR /home/freshrank

EXPOSE 8080 8081 8082 8090
ENTRYPOINT ["freshrank"]
CMD ["--help"]
