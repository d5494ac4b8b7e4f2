# Injected into the build with -DCMAKE_PROJECT_INCLUDE=<this file> when building against the ROS 2 wheels
# from PyPI (setup.py does it; a colcon build against a normal ROS 2 install does not need it).
#
# Why: the wheels' exported CMake targets (std_msgs::std_msgs__rosidl_generator_py and the like) carry the
# Python and NumPy include directories of the machine that built the wheels, e.g.
# /opt/python/cp311-cp311/include/python3.11, and CMake refuses to generate a build that uses an imported
# target whose include directory does not exist. Once configuration is over (deferred, because the
# targets are imported later by find_package), this replaces every such missing Python/NumPy include
# directory with this interpreter's and NumPy's. Other missing directories are left for CMake to report.
#
# The same generator gives this package's own echo_guidance__rosidl_generator_py target these include
# directories as PUBLIC ones, which end up in its exported CMake files: when the virtual environment lies
# inside the source tree (.venv/), CMake refuses to export a path "prefixed in the source directory", and
# anywhere else it would repeat the trap above for whoever uses the export. Those directories are
# therefore kept for this build only ($<BUILD_INTERFACE:...>); a consumer finds its own Python.
cmake_minimum_required(VERSION 3.21)  # cmake_language(DEFER): 3.19; the IMPORTED_TARGETS property: 3.21

set(ECHO_GUIDANCE_FOREIGN_INCLUDE_REGEX "/include/python3\\.[0-9]+$|/numpy/(_core|core)/include$"
  CACHE STRING "Include directories of imported targets that may be replaced by this interpreter's")

function(echo_guidance_fix_imported_include_dirs)
  set(replacement ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
  get_property(imported_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  set(fixed_targets "")
  foreach(target IN LISTS imported_targets)
    get_target_property(include_dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT include_dirs)
      continue()
    endif()
    set(kept "")
    set(replaced FALSE)
    foreach(dir IN LISTS include_dirs)
      if(NOT EXISTS "${dir}" AND dir MATCHES "${ECHO_GUIDANCE_FOREIGN_INCLUDE_REGEX}")
        set(replaced TRUE)
      else()
        list(APPEND kept "${dir}")
      endif()
    endforeach()
    if(replaced)
      if(NOT Python3_INCLUDE_DIRS OR NOT Python3_NumPy_INCLUDE_DIRS)
        message(FATAL_ERROR
          "${target} names Python/NumPy include directories that do not exist here (${include_dirs}), "
          "and no replacement is known: find_package(Python3 COMPONENTS Development.Module NumPy) "
          "has not run or found nothing (is NumPy installed for ${Python3_EXECUTABLE}?)")
      endif()
      list(APPEND kept ${replacement})
      list(REMOVE_DUPLICATES kept)
      set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${kept}")
      list(APPEND fixed_targets ${target})
    endif()
  endforeach()
  list(LENGTH fixed_targets fixed_count)
  message(STATUS "fix_wheel_include_dirs: replaced foreign Python/NumPy include directories of "
    "${fixed_count} imported targets with ${replacement}")

  get_property(own_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY BUILDSYSTEM_TARGETS)
  foreach(target IN LISTS own_targets)
    get_target_property(target_type ${target} TYPE)
    if(target_type STREQUAL "UTILITY")
      continue()
    endif()
    get_target_property(include_dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT include_dirs)
      continue()
    endif()
    set(rewritten "")
    foreach(dir IN LISTS include_dirs)
      if(dir IN_LIST replacement)
        list(APPEND rewritten "$<BUILD_INTERFACE:${dir}>")
      else()
        list(APPEND rewritten "${dir}")
      endif()
    endforeach()
    if(NOT rewritten STREQUAL include_dirs)
      set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${rewritten}")
      message(STATUS "fix_wheel_include_dirs: ${target} exports no Python/NumPy include directories")
    endif()
  endforeach()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL echo_guidance_fix_imported_include_dirs)
