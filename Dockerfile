# The tideflow image: one image for every process (api, scheduler, worker, migrate).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sdk sdk
COPY broker broker
COPY scheduler scheduler
COPY worker worker
COPY store store
COPY api api
COPY cli cli
COPY examples examples
RUN pip install --no-cache-dir ".[cluster]"
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["tideflow"]
