FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/pullgate pullgate \
    && mkdir -p /var/lib/pullgate && chown pullgate /var/lib/pullgate
COPY config/pullgate.yaml /etc/pullgate/pullgate.yaml
USER pullgate
EXPOSE 5050
ENTRYPOINT ["pullgate", "serve"]
CMD ["--config", "/etc/pullgate/pullgate.yaml", "--listen", "0.0.0.0:5050", "--state-dir", "/var/lib/pullgate"]
