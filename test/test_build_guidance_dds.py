"""echo_guidance/msg/Guidance crosses DDS between two processes with every field intact."""

import json
import math

from ros_peer import message_class, message_to_dict

GUIDANCE = 'echo_guidance/msg/Guidance'


def distinctive_guidance(index):
    """Return a Guidance message (as a dict) whose every field differs from its default."""
    quaternion = [0.1, -0.2, 0.3]
    quaternion.append(math.sqrt(1.0 - sum(q * q for q in quaternion)))
    return {
        'header': {'stamp': {'sec': 1_700_000_123 + index, 'nanosec': 456_789_012 + index},
                   'frame_id': 'probe'},
        'target_plane': ('PLAX', 'PSAX-AV', 'PSAX-MV')[index % 3],
        'valid': True,
        'status': f'round trip #{index}: ünïcode ✓',
        'target_in_probe': {
            'position': {'x': 0.0123 + index, 'y': -0.0456, 'z': 0.0789},
            'orientation': dict(zip('xyzw', quaternion)),
        },
        'action': [1.5 + index, -2.25, 3.125, -10.5, 20.75, -179.875],
        'axis_confidence': [0.1, 0.2, 0.3, 0.4, 0.5, 0.6 + index / 100],
        'confidence': 0.875,
        'plane_reached': True,
        'distance': 0.625 + index,
        'stage': ('coarse', 'fine', 'single')[index % 3],
        'model_id': 'dreamer-cpu@3f2a1c9e/onnxruntime-cpu',
    }


def leaves(value, path=''):
    """Yield (dotted path, value) for every leaf field of a nested message dict."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f'{path}.{key}' if path else key)
    else:
        yield path, value


def test_sample_sets_every_field_to_a_non_default_value():
    sample = dict(leaves(distinctive_guidance(0)))
    defaults = dict(leaves(message_to_dict(message_class(GUIDANCE)())))
    assert sample.keys() == defaults.keys(), 'the sample must set every Guidance field, no more'
    same = [path for path in sample if sample[path] == defaults[path]]
    assert not same, f'fields left at their default cannot show a lost value: {same}'


def test_guidance_round_trips_between_processes(processes, ros_peer, ros_domain_id):
    sent = [distinctive_guidance(i) for i in range(3)]
    topic = f'/test_guidance_dds_{ros_domain_id}'
    echo = processes.start([ros_peer, 'echo', GUIDANCE, topic, '--count', len(sent), '--timeout', 60],
                           name='subscriber')
    publisher = processes.start([ros_peer, 'pub', GUIDANCE, topic, json.dumps(sent), '--timeout', 60],
                                name='publisher')
    assert publisher.wait(timeout=90) == 0, publisher.output()
    assert echo.wait(timeout=90) == 0, echo.output()
    received = [json.loads(line) for line in echo.output().splitlines() if line.startswith('{')]
    assert received == sent
