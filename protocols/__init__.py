"""troupe's language: typed messages, the envelope they travel in, topics, and the bus.

Nothing here imports the rest of troupe; every other package speaks through these types.
"""

from protocols._base import AgentName, Message, StepId, TaskId
from protocols._bus import DEFAULT_TIMEOUT_S, Bus, Consumer
from protocols._inprocess import InProcessBus
from protocols._raybus import RayBus
from protocols.errors import (
    AgentError,
    BackPressureError,
    ConfigurationError,
    DeliveryError,
    ErrorReport,
    MessageValidationError,
    RemoteAgentError,
    TaskError,
    TroupeError,
)
from protocols.execution import StepAssigned, StepResult, ToolCall
from protocols.messages import (
    MESSAGE_ADAPTER,
    SCHEMA_VERSION,
    AnyMessage,
    Envelope,
    Provenance,
    Topics,
    describe_validation_error,
    parse_message,
)
from protocols.planning import MAX_PLAN_STEPS, Plan, PlanProposed, PlanRequested, Step
from protocols.review import Decision, ReviewRequested, ReviewVerdict
from protocols.tasks import (
    Budget,
    StepRecord,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    TraceEvent,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_PLAN_STEPS",
    "MESSAGE_ADAPTER",
    "SCHEMA_VERSION",
    "AgentError",
    "AgentName",
    "AnyMessage",
    "BackPressureError",
    "Budget",
    "Bus",
    "ConfigurationError",
    "Consumer",
    "Decision",
    "DeliveryError",
    "Envelope",
    "ErrorReport",
    "InProcessBus",
    "Message",
    "MessageValidationError",
    "Plan",
    "PlanProposed",
    "PlanRequested",
    "Provenance",
    "RayBus",
    "RemoteAgentError",
    "ReviewRequested",
    "ReviewVerdict",
    "Step",
    "StepAssigned",
    "StepId",
    "StepRecord",
    "StepResult",
    "TaskCompleted",
    "TaskError",
    "TaskFailed",
    "TaskId",
    "TaskSubmitted",
    "ToolCall",
    "Topics",
    "TraceEvent",
    "TroupeError",
    "describe_validation_error",
    "parse_message",
]
