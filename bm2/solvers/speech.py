"""Compatibility name: the brainmagick solver is the generic :class:`bm2.solvers.solver.Solver`."""

from .solver import OptimParams, Solver

SpeechSolver = Solver

__all__ = ["OptimParams", "SpeechSolver", "Solver"]
