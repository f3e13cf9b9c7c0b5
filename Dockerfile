# Image for the slidestream services in docker-compose.yml (bootstrap, agents, viewer, HIS listener).
FROM python:3.11-slim
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir .
USER nobody
