"""Validates rendered Kubernetes manifests: every object against the Kubernetes JSON schema of its
kind and version (kubernetes-validate, strict: unknown fields are errors), and KEDA ScaledObjects
against the schema taken from KEDA's published CRD, with every object schema that lists
`properties` treated as closed (the API server would prune an unknown field silently).

usage: validate.py RENDERED.yaml KEDA_SCHEMA.yaml KUBERNETES_VERSION
prints one JSON line per object: {"kind", "name", "errors": [...]}; exits 0 (the caller judges)."""

import json
import sys

import jsonschema
import kubernetes_validate
import yaml


def closed(schema):
    if isinstance(schema, dict):
        schema = {k: closed(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [closed(s) for s in schema]
    return schema


def main():
    rendered, keda_schema, version = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(keda_schema) as f:
        keda = closed(yaml.safe_load(f))
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        kind = doc.get("kind", "?")
        name = doc.get("metadata", {}).get("name", "?")
        errors = []
        if doc.get("apiVersion", "").startswith("keda.sh/"):
            if doc["apiVersion"] != "keda.sh/v1alpha1":
                errors.append("KEDA's CRD serves keda.sh/v1alpha1 only")
            for e in jsonschema.Draft7Validator(keda).iter_errors(doc):
                errors.append("%s: %s" % ("/".join(map(str, e.absolute_path)), e.message))
        else:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                errors.append("%s: %s" % ("/".join(map(str, e.path)), e.message))
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append("no schema: %s" % e)
        print(json.dumps({"kind": kind, "name": name, "errors": errors}))


if __name__ == "__main__":
    main()
