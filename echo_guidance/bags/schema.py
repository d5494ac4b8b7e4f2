"""Names, types and versions of the demonstration bag format (see docs/bag-format.md).

Everything that writes or reads a demonstration bag takes topic names, message types and the
schema version from here, so the format is defined in one place.

The project's own message types (``echo_guidance/msg/*``) are registered with a rosbags
typestore from the ``.msg`` files themselves: from ``msg/`` next to the package in a source
checkout, or from ``share/echo_guidance/msg`` where ``rosidl_generate_interfaces`` installs them.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

#: Version of the layout described in docs/bag-format.md. Bump it when a topic, type or meaning
#: changes; readers refuse versions they do not know instead of misreading them.
SCHEMA_VERSION = '1'
SUPPORTED_SCHEMA_VERSIONS = ('1',)

#: ROS 2 distribution whose standard message definitions the bag uses.
ROS_DISTRO = 'kilted'

#: rosbag2 metadata.yaml version written (Jazzy/Kilted).
ROSBAG2_VERSION = 9
STORAGE_ID = 'mcap'
SERIALIZATION = 'cdr'
MCAP_PROFILE = 'ros2'

# Keys this format puts into metadata.yaml's ``custom_data`` (string -> string, rosbag2 >= v6).
KEY_SCHEMA_VERSION = 'echo_guidance.schema_version'
KEY_STATE = 'echo_guidance.recording_state'
KEY_LOG_TIME_CLAMPED = 'echo_guidance.log_times_clamped'
KEY_REPAIR = 'echo_guidance.repair'

#: Recording states in ``custom_data[KEY_STATE]``.
STATE_IN_PROGRESS = 'in_progress'
STATE_COMPLETE = 'complete'
STATE_REPAIRED = 'repaired'

#: Name of the MCAP metadata record this format writes at the start of the file, so an MCAP file
#: separated from its metadata.yaml still says what it is.
MCAP_METADATA_NAME = 'echo_guidance'

TOPIC_IMAGE = '/us/image'
TOPIC_PROBE_POSE = '/arm/probe_pose'
TOPIC_WRENCH = '/arm/wrench'
TOPIC_PEDAL = '/pedal/event'
TOPIC_SYNCED_POSE = '/recorder/synced_pose'
TOPIC_SESSION = '/session/info'

#: Topic name -> message type, in the order channels are registered in the MCAP file.
TOPIC_TYPES = {
    TOPIC_SESSION: 'echo_guidance/msg/SessionInfo',
    TOPIC_IMAGE: 'sensor_msgs/msg/Image',
    TOPIC_PROBE_POSE: 'geometry_msgs/msg/PoseStamped',
    TOPIC_SYNCED_POSE: 'echo_guidance/msg/SyncedPose',
    TOPIC_PEDAL: 'echo_guidance/msg/PedalEvent',
    TOPIC_WRENCH: 'geometry_msgs/msg/WrenchStamped',
}

#: Topics a demonstration bag must contain (as channels; /session/info also needs its message).
REQUIRED_TOPICS = (TOPIC_SESSION, TOPIC_IMAGE, TOPIC_PROBE_POSE, TOPIC_SYNCED_POSE)

IMAGE_ENCODING = 'mono8'
FRAME_ID_PROBE = 'probe'
FRAME_ID_BASE = 'base'

#: Fields of the session dictionary given to the writer and returned by the reader.
#: flange_to_probe is a 4x4 homogeneous transform in millimetres (stored as a Pose in metres).
SESSION_FIELDS = (
    'operator_id',
    'subject_id',
    'target_plane',
    'probe_model',
    'flange_to_probe',
    'crop',
    'width',
    'height',
    'image_latency',
    'software_version',
    'extra_yaml',
    'stamp_ns',
)
#: Session fields the writer cannot do without.
SESSION_REQUIRED = ('target_plane', 'width', 'height', 'flange_to_probe')
#: Planes a demonstration may target: the guidance planes plus A4C for segmentation recordings.
SESSION_PLANES = ('PLAX', 'PSAX-AV', 'PSAX-MV', 'A4C')

MSG_DIR_ENV = 'ECHO_GUIDANCE_MSG_DIR'


class MessageDefinitionsNotFoundError(FileNotFoundError):
    """The project's .msg files could not be found in the source tree or the install."""


def _candidate_msg_dirs():
    """Yield the directories that may hold echo_guidance's .msg files, most specific first."""
    if os.environ.get(MSG_DIR_ENV):
        yield Path(os.environ[MSG_DIR_ENV])
    package_dir = Path(__file__).resolve().parent.parent
    # Source checkout: <repo>/echo_guidance/bags/schema.py -> <repo>/msg.
    yield package_dir.parent / 'msg'
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    # Installed into a prefix: <prefix>/lib/python3.X/site-packages/echo_guidance -> <prefix>.
    if len(package_dir.parents) > 3:
        prefixes.append(str(package_dir.parents[3]))
    for prefix in prefixes:
        yield Path(prefix) / 'share' / 'echo_guidance' / 'msg'


def find_msg_dir() -> Path:
    """Return the directory holding echo_guidance's .msg files.

    Raises:
        MessageDefinitionsNotFoundError: when none of the known places has them.
    """
    tried = []
    for candidate in _candidate_msg_dirs():
        tried.append(str(candidate))
        if (candidate / 'SessionInfo.msg').is_file():
            return candidate
    raise MessageDefinitionsNotFoundError(
        'echo_guidance message definitions (SessionInfo.msg, ...) not found; looked in: '
        + ', '.join(tried)
        + f'. Set {MSG_DIR_ENV} to the folder holding the .msg files.'
    )


def _base_store():
    """Return the rosbags store for the ROS distribution the bags use."""
    from rosbags.typesys import Stores

    return getattr(Stores, 'ROS2_' + ROS_DISTRO.upper(), Stores.LATEST)


@functools.lru_cache(maxsize=1)
def get_typestore():
    """Return a rosbags typestore with the standard ROS 2 types and echo_guidance's own types.

    The store is cached; treat it as read-only.
    """
    from rosbags.typesys import get_types_from_msg
    from rosbags.typesys import get_typestore as rosbags_typestore

    store = rosbags_typestore(_base_store())
    msg_dir = find_msg_dir()
    types = {}
    for msg_file in sorted(msg_dir.glob('*.msg')):
        types.update(get_types_from_msg(msg_file.read_text(), f'echo_guidance/msg/{msg_file.stem}'))
    store.register(types)
    return store


def typestore_from_definitions(definitions):
    """Return a typestore built from message definitions stored in a bag (cached; treat as read-only).

    Args:
        definitions: iterable of (msgtype, ros2msg definition text) pairs as found in the bag's
            MCAP schemas. Reading with the bag's own definitions keeps old bags readable after the
            project's .msg files change.
    """
    return _typestore_from_definitions(tuple((str(name), str(text)) for name, text in definitions))


@functools.lru_cache(maxsize=32)
def _typestore_from_definitions(definitions):
    from rosbags.typesys import get_types_from_msg
    from rosbags.typesys import get_typestore as rosbags_typestore

    store = rosbags_typestore(_base_store())
    types = {}
    for msgtype, text in definitions:
        if text:
            types.update(get_types_from_msg(text, msgtype))
    # Standard types are already present; registering identical ones again is allowed, a
    # conflicting definition raises (the bag and the store disagree about a standard type).
    store.register(types)
    return store
