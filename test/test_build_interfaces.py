"""The installed echo_guidance.msg / echo_guidance.srv types match the definitions in msg/ and srv/.

A failure here after editing a .msg/.srv file means the installed copy is stale: run scripts/bootstrap.sh.
"""

import importlib

import pytest
from conftest import REPO_ROOT
from rosidl_adapter.parser import parse_message_file, parse_service_file

MESSAGE_FILES = sorted((REPO_ROOT / 'msg').glob('*.msg'))
SERVICE_FILES = sorted((REPO_ROOT / 'srv').glob('*.srv'))
# .msg primitive names that the generated Python classes report under their IDL names.
IDL_NAMES = {'bool': 'boolean', 'byte': 'octet', 'char': 'uint8', 'float32': 'float', 'float64': 'double'}


def idl_type(field_type):
    """Return the type string that get_fields_and_field_types() reports for a parsed .msg field type."""
    if field_type.pkg_name:
        base = f'{field_type.pkg_name}/{field_type.type}'
    else:
        base = IDL_NAMES.get(field_type.type, field_type.type)
        if field_type.string_upper_bound:
            base = f'{base}<{field_type.string_upper_bound}>'
    if not field_type.is_array:
        return base
    if field_type.array_size is None:
        return f'sequence<{base}>'
    if field_type.is_upper_bound:
        return f'sequence<{base}, {field_type.array_size}>'
    return f'{base}[{field_type.array_size}]'


def check_matches(cls, spec):
    expected = {field.name: idl_type(field.type) for field in spec.fields}
    assert cls.get_fields_and_field_types() == expected
    for constant in spec.constants:
        assert getattr(cls, constant.name) == constant.value, constant.name


def test_definitions_exist():
    names = {path.stem for path in MESSAGE_FILES + SERVICE_FILES}
    assert {'Guidance', 'PedalEvent', 'SyncedPose', 'SessionInfo', 'RecorderStatus', 'Deadman',
            'SetTargetPlane'} <= names


@pytest.mark.parametrize('path', MESSAGE_FILES, ids=lambda p: p.stem)
def test_message_matches_definition(path):
    spec = parse_message_file('echo_guidance', str(path))
    cls = getattr(importlib.import_module('echo_guidance.msg'), path.stem)
    check_matches(cls, spec)


@pytest.mark.parametrize('path', SERVICE_FILES, ids=lambda p: p.stem)
def test_service_matches_definition(path):
    spec = parse_service_file('echo_guidance', str(path))
    cls = getattr(importlib.import_module('echo_guidance.srv'), path.stem)
    check_matches(cls.Request, spec.request)
    check_matches(cls.Response, spec.response)


def test_no_installed_type_without_definition():
    msg = importlib.import_module('echo_guidance.msg')
    srv = importlib.import_module('echo_guidance.srv')
    # Services also export their Request/Response/Event parts as SetTargetPlane_Request etc.
    installed = {name for module in (msg, srv) for name in dir(module)
                 if name[:1].isupper() and '_' not in name}
    defined = {path.stem for path in MESSAGE_FILES + SERVICE_FILES}
    assert installed == defined


@pytest.mark.parametrize('path', MESSAGE_FILES, ids=lambda p: p.stem)
def test_message_serializes_through_its_typesupport(path):
    from rclpy.serialization import deserialize_message, serialize_message

    cls = getattr(importlib.import_module('echo_guidance.msg'), path.stem)
    message = cls()
    assert deserialize_message(serialize_message(message), cls) == message
