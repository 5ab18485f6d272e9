"""Strict deserialisation into the KServe SDK's model classes.

The SDK's own ``ApiClient.deserialize`` drops unknown keys silently and looks
nested classes up in ``kserve.models`` only (the Kubernetes core types such as
``V1ObjectMeta`` live in ``kubernetes.client.models``). This walker does what
the deserializer does (construct each SDK model class from its
``openapi_types`` / ``attribute_map``, so the classes' own setters validate),
resolves class names in both modules, and fails on any key a class does not
declare, so "no unknown fields" is checked, not assumed.
"""

from __future__ import annotations

import re

import kserve.models
import kubernetes.client.models

_NATIVE = {"str": str, "int": int, "bool": bool, "float": float, "object": object}


class UnknownField(AssertionError):
    pass


def _klass(name: str):
    for module in (kserve.models, kubernetes.client.models):
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(f"no SDK model class {name}")


def build(data, type_name: str, where: str = "$"):
    if data is None:
        return None
    if m := re.fullmatch(r"list\[(.*)\]", type_name):
        assert isinstance(data, list), f"{where}: expected a list"
        return [build(v, m.group(1), f"{where}[{i}]") for i, v in enumerate(data)]
    if m := re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name):
        assert isinstance(data, dict), f"{where}: expected a map"
        return {k: build(v, m.group(2), f"{where}.{k}") for k, v in data.items()}
    if type_name in _NATIVE:
        native = _NATIVE[type_name]
        assert native is object or isinstance(data, native), f"{where}: {data!r} is not {type_name}"
        return data
    klass = _klass(type_name)
    assert isinstance(data, dict), f"{where}: expected an object for {type_name}"
    by_json = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    unknown = sorted(set(data) - set(by_json))
    if unknown:
        raise UnknownField(f"{where}: {type_name} has no field(s) {unknown}")
    kwargs = {
        by_json[k]: build(v, klass.openapi_types[by_json[k]], f"{where}.{k}")
        for k, v in data.items()
    }
    return klass(**kwargs)


def inference_service(data: dict):
    return build(data, "V1beta1InferenceService")
