# One image for the operator and every freshrank service: `freshrank <role>`
# (operator, feature, trainer, ranking). Triton runs NVIDIA's own image.
#
#   docker build -t freshrank:0.1.0 .                                      CPU torch
#   docker build --build-arg TORCH_VARIANT=cu128 -t freshrank:0.1.0-cuda .  CUDA torch
#
# The CUDA variant has the same entry point; the operator runs it for trainers with
# `trainer.gpus > 0` (the CR's image tag with `-cuda`, or `trainer.image`). The CUDA wheels
# carry their CUDA runtime; the node's driver comes from the NVIDIA container toolkit.
FROM python:3.11-slim AS build
ARG TORCH_VARIANT=cpu

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# torch first, from the wheel index of the variant: anything resolving torch later finds it
# satisfied instead of pulling another build.
RUN python -m venv /opt/freshrank \
 && /opt/freshrank/bin/pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
      torch==2.13.0

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
