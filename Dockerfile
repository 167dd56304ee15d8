# The sample-efficiency service (functions/efficiency/service.py) in a container:
#   docker build -t transfer-learning-benchmark .
#   docker run -p 8000:80 transfer-learning-benchmark      # then open http://localhost:8000/docs
# Configure it with -e TRANSFER_SERVICE_<FIELD>=... (see functions.efficiency.service.Settings).
FROM python:3.11-slim

# torch's CPU wheels (same versions as pinned in requirements.txt) keep the image small;
# build with --build-arg TORCH_INDEX=https://pypi.org/simple for the default CUDA wheels.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg \
    TRANSFER_DATA_ROOT=/app/data

WORKDIR /app
COPY requirements.txt .
RUN pip install --extra-index-url "$TORCH_INDEX" -r requirements.txt

COPY . .
RUN pip install --no-deps -e .
# Data, the source model (reused when committed, trained otherwise) and the cached target
# features are made at build time, so the container answers within seconds of starting.
RUN python -m functions prepare-data MNIST \
 && python -m functions pretrain MNIST --profile quick \
 && python -c "from functions.efficiency.service import Settings, load_state; load_state(Settings.from_env())"

EXPOSE 80
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:80/health', timeout=4)"
CMD ["uvicorn", "functions.efficiency.service:app", "--host", "0.0.0.0", "--port", "80"]
