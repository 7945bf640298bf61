# One image for both roles: the default command runs the server; docker-compose.yml runs
# the worker from the same image with `python worker.py`.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so code changes don't reinstall them.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

RUN useradd --create-home --uid 10001 jobline

# The app stays owned by root, so the process can't rewrite its own code.
COPY *.py ./
COPY jobline/ ./jobline/
COPY static/ ./static/
# Compiled once here: every container start would compile the package again (PYTHONDONTWRITEBYTECODE)
RUN python -m compileall -q /app

USER jobline
EXPOSE 8080
CMD ["python", "server.py", "--host", "0.0.0.0"]
