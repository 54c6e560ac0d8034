from setuptools import find_packages, setup

setup(
    name="dit_jax",
    version="0.1.0",
    description="Diffusion Transformers in JAX/Flax that track and prune memorization.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["dit_jax", "dit_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.7,<0.13",
        "flax>=0.12,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11.20,<0.13",
        "tensorflow-datasets>=4.9.7,<5",
        "array-record>=0.7,<1",
        "ml_collections>=1.0,<2",
        "absl-py>=2.1,<3",
        "numpy>=1.26,<3",
        "tensorboardX>=2.6,<3",
        "tqdm>=4.66,<5",
        "matplotlib>=3.8,<4",
        "scikit-learn>=1.4,<2",
        "scipy>=1.11,<2",
        "diffrax>=0.7,<0.8",  # the probability-flow ODE of the likelihood evaluation
        "pillow>=10,<14",
    ],
    # bench: bench/vs_torch/torch_vs_jax.py's PyTorch DiT only (pinned: the CPU wheel on disk);
    # nothing in dit_jax imports torch. tensorboard: only to view a workdir's events
    # (tensorboardX writes them without it). cuda12 / tpu: JAX's own backend plugins
    # through jax's extras of the same names, which pin them to the installed jax's
    # version (constraints.txt pins jax); `make run ACCEL=...` picks one (docs/SCALE.md)
    extras_require={"test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "hypothesis>=6.100,<7"],
                    "bench": ["torch==2.13.0"],
                    "tensorboard": ["tensorboard>=2.16,<3"],
                    "cuda12": ["jax[cuda12]"],
                    "tpu": ["jax[tpu]"]},
)
