"""Conversions between the recommendation enums and messages and their domain forms."""

from __future__ import annotations

from dataservice.v1 import recommendation_service_pb2 as pb

from server.domain.recommendations import Feedback, Interaction, InteractionType, Reason
from server.messages.common import set_timestamp

INTERACTION_TO_MESSAGE: dict[InteractionType, int] = {
    InteractionType.VIEW: pb.INTERACTION_TYPE_VIEW,
    InteractionType.LIKE: pb.INTERACTION_TYPE_LIKE,
    InteractionType.SHARE: pb.INTERACTION_TYPE_SHARE,
    InteractionType.BOOKMARK: pb.INTERACTION_TYPE_BOOKMARK,
    InteractionType.DISMISS: pb.INTERACTION_TYPE_DISMISS,
}
INTERACTION_FROM_MESSAGE = {number: kind for kind, number in INTERACTION_TO_MESSAGE.items()}
FEEDBACK_FROM_MESSAGE: dict[int, Feedback] = {
    pb.RECOMMENDATION_FEEDBACK_ACCEPTED: Feedback.ACCEPTED,
    pb.RECOMMENDATION_FEEDBACK_REJECTED: Feedback.REJECTED,
}
REASON_TO_MESSAGE: dict[Reason, int] = {
    Reason.SIMILAR: pb.RECOMMENDATION_REASON_SIMILAR,
    Reason.POPULAR: pb.RECOMMENDATION_REASON_POPULAR,
    Reason.PRECOMPUTED: pb.RECOMMENDATION_REASON_PRECOMPUTED,
}


def fill_interaction(message: pb.Interaction, interaction: Interaction) -> pb.Interaction:
    message.id = str(interaction.id)
    message.user_id = str(interaction.user_id)
    message.content_id = str(interaction.content_id)
    message.type = INTERACTION_TO_MESSAGE[interaction.type]
    set_timestamp(message.create_time, interaction.created_at)
    return message
