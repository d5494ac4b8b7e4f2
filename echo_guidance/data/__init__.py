"""From demonstration bags to training samples: dataset builder, subject splits, batch loaders.

Submodules: ``dataset`` (on-disk format, writer, reader), ``from_bags`` (bag segmentation into
demonstrations), ``loader`` (batches of frames and world-model pairs), ``synthetic`` (tiny
simulator-free demonstrations for tests). Nothing is imported here so that ``echo-guidance``
subcommand discovery stays light.
"""
