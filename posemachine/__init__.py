"""posemachine: a JAX/Flax 3D Human Pose Machine with self-supervised correction.

Wang, Lin et al., "3D Human Pose Machines with Self-supervised Learning", TPAMI 2019.
"""

__version__ = "0.1.0"
