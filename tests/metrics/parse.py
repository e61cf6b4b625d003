"""Parses a Prometheus scrape (stdin) with the Prometheus project's own Python parsers and prints
its families as JSON: [{"name", "type", "samples": [{"name", "labels", "value"}]}].

Both parsers must accept the body: the OpenMetrics one (the format /metrics announces, strict about
`# EOF`, counter suffixes and histogram buckets) and the classic text-format one.
"""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as text

body = sys.stdin.read()
# The classic parser must read it too (Prometheus falls back to it).
classic = {f.name for f in text(body)}
families = []
for f in openmetrics(body):
    families.append({
        "name": f.name,
        "type": f.type,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples],
    })
print(json.dumps({"families": families, "classic": sorted(classic)}))
