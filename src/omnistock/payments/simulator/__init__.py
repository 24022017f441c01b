"""The simulated PSP: in process for tests, over HTTP for end-to-end runs."""

from omnistock.payments.simulator.core import Fault, SimulatedPsp, SimulatorSettings, Webhook

__all__ = ["Fault", "SimulatedPsp", "SimulatorSettings", "Webhook"]
