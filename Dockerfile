# conduit-fleet image: `docker build -t conduit-fleet:0.1.0 .`
# The entry point is the `conduit-fleet` CLI; pass `coordinator` or `worker` (the Kubernetes manifests
# in k8s/ do) or any other subcommand, for example `channels list`.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY coordinator ./coordinator
COPY shard_worker ./shard_worker
COPY emulator ./emulator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CF_LOG_FORMAT=json \
    CF_HTTP_HOST=0.0.0.0
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && groupadd --system --gid 10001 conduit \
    && useradd --system --uid 10001 --gid conduit --no-create-home --shell /usr/sbin/nologin conduit
USER 10001:10001
EXPOSE 8080 9100
ENTRYPOINT ["conduit-fleet"]
CMD ["coordinator"]
