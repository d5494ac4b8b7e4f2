"""The shared test fixtures in conftest.py do what their docstrings promise."""

import os
import sys

import conftest
import pytest


def test_held_domain_ids_are_not_handed_out_twice():
    first, first_lock = conftest._lock_free_domain_id()
    second, second_lock = conftest._lock_free_domain_id()
    try:
        assert first != second
        assert first in conftest.DOMAIN_IDS and second in conftest.DOMAIN_IDS
    finally:
        first_lock.close()
        second_lock.close()


def test_ros_domain_id_is_set_for_this_process_and_subprocesses(ros_domain_id, ros_env):
    assert os.environ['ROS_DOMAIN_ID'] == str(ros_domain_id)
    assert ros_env['ROS_DOMAIN_ID'] == str(ros_domain_id)
    assert ros_env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'


def test_rclpy_context_is_on_the_test_domain(rclpy_context, ros_domain_id):
    import rclpy

    node = rclpy.create_node('test_support_probe', context=rclpy_context)
    try:
        assert rclpy_context.ok()
        assert rclpy_context.get_domain_id() == ros_domain_id
    finally:
        node.destroy_node()


def test_wait_until_returns_the_value_or_times_out(wait_until):
    calls = []
    assert wait_until(lambda: calls.append(1) or len(calls) >= 3 and 'done', timeout=5, interval=0) == 'done'
    with pytest.raises(TimeoutError, match='never true'):
        wait_until(lambda: False, timeout=0.05, message='never true')


def test_processes_capture_output_and_stop_what_keeps_running(tmp_path):
    group = conftest.ProcessGroup(dict(os.environ), tmp_path)
    done = group.start([sys.executable, '-c', 'print("hello from child")'], name='done')
    assert done.wait(timeout=30) == 0
    assert 'hello from child' in done.output()
    sleep_code = 'import time; print("sleeping", flush=True); time.sleep(600)'
    sleeper = group.start([sys.executable, '-c', sleep_code], name='sleeper')
    sleeper.wait_for_output('sleeping', timeout=30)
    group.stop_all()
    assert sleeper.popen.returncode is not None
    with pytest.raises(AssertionError, match='exited'):
        done.wait_for_output('never printed', timeout=5)
