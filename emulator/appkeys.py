"""Keys of the objects an emulator application stores."""

from __future__ import annotations

from aiohttp import web

from .faults import FaultStore
from .generator import GeneratorRegistry
from .housekeeping import Housekeeper
from .routing import Router
from .sessions import SessionManager
from .state import EmulatorState, Token

STATE_KEY = web.AppKey("emulator_state", EmulatorState)
FAULTS_KEY = web.AppKey("emulator_faults", FaultStore)
MANAGER_KEY = web.AppKey("emulator_sessions", SessionManager)
ROUTER_KEY = web.AppKey("emulator_router", Router)
GENERATORS_KEY = web.AppKey("emulator_generators", GeneratorRegistry)
HOUSEKEEPER_KEY = web.AppKey("emulator_housekeeper", Housekeeper)
TOKEN_KEY = web.RequestKey("helix_token", Token)
