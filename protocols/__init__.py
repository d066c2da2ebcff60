"""troupe's language: typed messages, the envelope they travel in, topics, and the bus.

Nothing here imports the rest of troupe; every other package speaks through these types.
"""

from protocols._base import AgentName, Message, StepId, TaskId
from protocols._bus import DeliveryCore
from protocols._bus_types import DEFAULT_TIMEOUT_S, Bus, BusConfig, BusStats, Consumer, GroupStats
from protocols._consumer import ConsumerClosedError, ConsumerHost, ConsumerStats
from protocols._deadletters import (
    DeadLetter,
    DeadLetterSink,
    DeadLetterStore,
    InMemoryDeadLetters,
)
from protocols._inprocess import InProcessBus
from protocols._lane import (
    LaneAddress,
    LaneBroken,
    LaneRemoteError,
    LaneServer,
    LaneUnavailable,
    lane_call,
)
from protocols._raybus import (
    ConsumerActor,
    DeadLetterActor,
    RayBus,
    RayDeadLetters,
    dead_letter_actor,
    member_lane,
    pickle_natively,
)
from protocols._schema import message_schemas, schema_breaks
from protocols.approvals import ApprovalDecided, ApprovalRequested
from protocols.control import CancelTask, Heartbeat
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
from protocols.execution import Recollection, StepAssigned, StepResult, ToolCall
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
from protocols.planning import (
    MAX_PLAN_STEPS,
    CheckKind,
    Plan,
    PlanProposed,
    PlanRequested,
    Step,
    StepCheck,
)
from protocols.review import Decision, ReviewRequested, ReviewVerdict
from protocols.tasks import (
    Budget,
    StepRecord,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    TraceEvent,
)
from protocols.usage import Usage

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_PLAN_STEPS",
    "MESSAGE_ADAPTER",
    "SCHEMA_VERSION",
    "AgentError",
    "AgentName",
    "AnyMessage",
    "ApprovalDecided",
    "ApprovalRequested",
    "BackPressureError",
    "Budget",
    "Bus",
    "BusConfig",
    "BusStats",
    "CancelTask",
    "CheckKind",
    "ConfigurationError",
    "Consumer",
    "ConsumerActor",
    "ConsumerClosedError",
    "ConsumerHost",
    "ConsumerStats",
    "DeadLetter",
    "DeadLetterActor",
    "DeadLetterSink",
    "DeadLetterStore",
    "Decision",
    "DeliveryCore",
    "DeliveryError",
    "Envelope",
    "ErrorReport",
    "GroupStats",
    "Heartbeat",
    "InMemoryDeadLetters",
    "InProcessBus",
    "LaneAddress",
    "LaneBroken",
    "LaneRemoteError",
    "LaneServer",
    "LaneUnavailable",
    "Message",
    "MessageValidationError",
    "Plan",
    "PlanProposed",
    "PlanRequested",
    "Provenance",
    "RayBus",
    "RayDeadLetters",
    "Recollection",
    "RemoteAgentError",
    "ReviewRequested",
    "ReviewVerdict",
    "Step",
    "StepAssigned",
    "StepCheck",
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
    "Usage",
    "dead_letter_actor",
    "describe_validation_error",
    "lane_call",
    "member_lane",
    "message_schemas",
    "parse_message",
    "pickle_natively",
    "schema_breaks",
]
