"""Freshrank: keep a recommender fresh, from Kafka events to a model served by Triton.

Layout (dependencies point one way, down this list):
- ``freshrank.cli``       the one ``freshrank`` command (composition root)
- ``freshrank.feature``, ``freshrank.trainer``, ``freshrank.ranking``  the three services
- ``freshrank.embedded``  real local components (Tansu broker, tritonserver), supervised
- ``freshrank.sim``       event generators and dataset replays
- ``freshrank.model``     models, ID maps, TorchScript export (trainer and serving share it)
- ``freshrank.core``      contracts and plumbing every service imports
- ``freshrank.v1``        protobuf code generated from ``protos/`` at build time
"""

__version__ = "0.1.0"
