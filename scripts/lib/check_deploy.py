"""Offline checks of deploy/ beyond the Kubernetes schemas (run by
scripts/validate-deploy inside its venv):

- every Dockerfile parses (dockerfile-parse), uses only known instructions,
  is multi-stage, copies only from stages it defines, runs its final stage
  as a non-root numeric user and has a HEALTHCHECK on /healthz;
- every shell script held in a ConfigMap passes `sh -n`;
- every manifest names the health endpoints the app serves when it probes
  the app.

Exits 1 with one line per problem.
"""

import pathlib
import re
import subprocess
import sys
import tempfile

import yaml
from dockerfile_parse import DockerfileParser

INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK",
    "SHELL", "COMMENT",
}

problems = []


def check_dockerfile(path):
    parser = DockerfileParser(path=str(path))
    stages, last_user, healthcheck = [], None, None
    for item in parser.structure:
        instruction, value = item["instruction"], item["value"]
        if instruction not in INSTRUCTIONS:
            problems.append(f"{path}:{item['startline'] + 1}: unknown instruction {instruction}")
        if instruction == "FROM":
            words = value.split()
            stages.append(words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None)
            last_user, healthcheck = None, None
        elif instruction == "COPY":
            source = re.search(r"--from=(\S+)", value)
            if source and source.group(1).lower() not in stages[:-1]:
                problems.append(f"{path}: COPY --from={source.group(1)} names no earlier stage")
        elif instruction == "USER":
            last_user = value.split(":")[0]
        elif instruction == "HEALTHCHECK":
            healthcheck = value
    if len(stages) < 2:
        problems.append(f"{path}: not multi-stage ({len(stages)} FROM)")
    if last_user is None or not last_user.isdigit() or last_user == "0":
        problems.append(f"{path}: the final stage does not run as a non-root numeric USER")
    if healthcheck is None or "/healthz" not in healthcheck:
        problems.append(f"{path}: the final stage has no HEALTHCHECK on /healthz")


def check_manifest(path):
    with open(path) as f:
        documents = [d for d in yaml.safe_load_all(f) if d]
    for doc in documents:
        if doc.get("kind") == "ConfigMap":
            for name, text in (doc.get("data") or {}).items():
                if name.endswith(".sh"):
                    with tempfile.NamedTemporaryFile("w", suffix=".sh") as script:
                        script.write(text)
                        script.flush()
                        result = subprocess.run(["sh", "-n", script.name], capture_output=True, text=True)
                    if result.returncode != 0:
                        problems.append(f"{path}: ConfigMap {doc['metadata']['name']} {name}: {result.stderr.strip()}")
        for probe_path in re.findall(r"'path': '([^']+)'", str(doc)):
            if doc.get("kind") in ("Deployment", "StatefulSet") and probe_path not in ("/healthz", "/readyz"):
                problems.append(f"{path}: probe path {probe_path} is not /healthz or /readyz")


def main():
    root = pathlib.Path(sys.argv[1])
    for dockerfile in sorted(root.rglob("Dockerfile*")):
        if dockerfile.name.endswith(".dockerignore"):
            continue
        check_dockerfile(dockerfile)
    for manifest in sys.argv[2:]:
        check_manifest(manifest)
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)


main()
