# Image for the slidestream services in docker-compose.yml (bootstrap, agents, viewer, HIS listener).
# OpenSeadragon comes from npm in a build stage; the viewer serves it (no CDN).
FROM node:20-slim AS web
WORKDIR /web
COPY viewer/web/package.json viewer/web/package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim
WORKDIR /app
COPY . .
COPY --from=web /web/node_modules /app/viewer/web/node_modules
# Editable: the code runs from /app, where the viewer finds static/ and web/node_modules/.
RUN pip install --no-cache-dir -e .
USER nobody
