"""A verify report as (:Intervention) nodes: one per check, in one transaction."""

from __future__ import annotations

from typing import Any

import neo4j

from circuitstore.ingest.intervene.cypher import WRITE_INTERVENTIONS
from circuitstore.ingest.intervene.verify import Check, VerifyReport
from circuitstore.schema.connection import translate_errors
from circuitstore.schema.model import content_hash
from circuitstore.schema.names import FeatureKey, parse_feature


def intervention_rows(report: VerifyReport) -> list[dict[str, Any]]:
    """The write rows of a report's checks, one (:Intervention) each."""
    single = [_row(report, c, "single") for c in report.checks]
    return [*single, _row(report, report.circuit, "together")]


def write_report(driver: neo4j.Driver, database: str, report: VerifyReport) -> int:
    """Write every check of `report`; returns how many Intervention nodes it wrote."""
    rows = intervention_rows(report)
    with translate_errors(), driver.session(database=database) as session:
        session.execute_write(
            lambda tx: tx.run(WRITE_INTERVENTIONS, prompt=report.prompt.id, rows=rows).consume()
        )
    return len(rows)


def _row(report: VerifyReport, check: Check, kind: str) -> dict[str, Any]:
    info = report.prompt
    refs = [parse_feature(f) for f in check.features]
    ids = sorted({FeatureKey(info.transcoder_set, r.layer, r.index).id for r in refs})
    key = content_hash(info.id, kind, *sorted(check.features), repr(report.scale))
    props = {
        "prompt": info.id,
        "promptKey": info.key,
        "transcoderSet": info.transcoder_set,
        "kind": kind,
        "features": list(check.features),
        "scale": report.scale,
        "mode": report.mode,
        "answer": report.answer[0],
        "answerToken": report.answer[1],
        "runnerUp": report.runner_up[0],
        "runnerUpToken": report.runner_up[1],
        "influence": check.influence,
        "frozenTargets": check.targets,
        "frozenError": check.frozen_error,
        "predictedLogit": check.predicted_logit,
        "observedLogit": check.observed_logit,
        "predictedDiff": check.predicted_diff,
        "observedDiff": check.observed_diff,
        "flips": check.flips,
        "topToken": check.top_token,
    }
    return {"id": key, "props": props, "features": ids}
