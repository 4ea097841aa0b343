"""A parsed query back in the JSON form of Dapr's query language, as the pluggable protocol carries it
(each top-level filter operator's operand as JSON in an Any, as daprd sends it)."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import any_pb2

from ...query import Compare, Filter, In, Query
from .proto import state_pb2


def _path(path: tuple[str, ...]) -> str:
    return ".".join(path)


def filter_json(node: Filter) -> dict[str, Any]:
    if isinstance(node, Compare):
        return {node.op.value: {_path(node.path): node.value}}
    if isinstance(node, In):
        return {"IN": {_path(node.path): list(node.values)}}
    return {node.op.value: [filter_json(child) for child in node.children]}


def query_message(query: Query) -> state_pb2.QueryRequest:
    filters = (
        {
            op: any_pb2.Any(value=json.dumps(operand).encode())
            for op, operand in filter_json(query.filter).items()
        }
        if query.filter is not None
        else {}
    )
    return state_pb2.QueryRequest(
        query=state_pb2.Query(
            filter=filters,
            sort=[
                state_pb2.Sorting(
                    key=_path(s.path), order=state_pb2.Sorting.DESC if s.descending else state_pb2.Sorting.ASC
                )
                for s in query.sort
            ],
            pagination=state_pb2.Pagination(
                limit=query.limit, token=str(query.offset) if query.offset else ""
            ),
        )
    )
