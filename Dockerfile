# The hpsearch image: the package (TensorFlow, Keras, Optuna, MLflow), psycopg (v3, what SQLAlchemy 2.1 uses for
# postgresql:// URLs: MLflow's backend store and the Optuna storage) and optuna-dashboard. docker-compose.yml runs
# the MLflow server, the workers and the dashboard from it.
FROM python:3.11-slim

ENV TF_CPP_MIN_LOG_LEVEL=3 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user. /mlartifacts is created here, owned by it, because a fresh named volume takes the
# owner of its mount point from the image: without this the MLflow server could not write artifacts.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin hpsearch \
    && mkdir -p /app /mlartifacts \
    && chown hpsearch:hpsearch /app /mlartifacts

WORKDIR /app

# What `pip install .` needs (pyproject.toml names README.md as the readme) before the studies, so that
# editing a study does not reinstall TensorFlow.
COPY pyproject.toml README.md ./
COPY hpsearch/ hpsearch/
RUN pip install --no-cache-dir ".[postgres,dashboard]" \
    && rm -rf build *.egg-info

COPY studies/ studies/

USER hpsearch

CMD ["python", "-m", "hpsearch", "--help"]
