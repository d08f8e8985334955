"""Demo data, loaded through the service's own API (``python -m server seed --demo``): users, a session,
published content on three topics with tags, a collection of content embeddings, interactions, feedback and a
precomputed list, so that every RPC has something to answer right after ``make run``.

Every create carries a request id derived from the demo's own names (uuid5), so loading twice changes
nothing: the service answers the retries with what the first load made. Embeddings are made without a model:
each word of a text adds a fixed pseudo-random direction (from its hash), so texts that share words point
alike, and the same text always gives the same vector.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass

import grpc
from dataservice.v1 import common_pb2
from dataservice.v1 import content_service_pb2 as content_pb
from dataservice.v1 import content_service_pb2_grpc
from dataservice.v1 import embedding_service_pb2 as embedding_pb
from dataservice.v1 import embedding_service_pb2_grpc
from dataservice.v1 import recommendation_service_pb2 as recommendation_pb
from dataservice.v1 import recommendation_service_pb2_grpc
from dataservice.v1 import session_service_pb2 as session_pb
from dataservice.v1 import session_service_pb2_grpc
from dataservice.v1 import user_service_pb2 as user_pb
from dataservice.v1 import user_service_pb2_grpc

DEMO_NAMESPACE = uuid.UUID("5f0c3c1e-3f5b-4b8e-9f6e-2d7a1c9b8e01")
COLLECTION = "content"  # RECOMMENDATION_COLLECTION's default: the feeds use it
DIMENSION = 64
PASSWORD = "demo-password"
USERS = [("alice", "databases"), ("bob", "cooking"), ("carol", "travel"), ("dave", "databases"), ("erin", "cooking")]
TOPICS = {
    "databases": [
        ("Indexing Postgres for speed", "btree gin and hnsw indexes make postgres queries fast"),
        ("Vector search with pgvector", "hnsw indexes in postgres find the nearest vectors fast"),
        ("Connection pools explained", "a pool keeps postgres connections open so queries start fast"),
        ("Caching reads with Redis", "a redis cache in front of postgres answers repeated reads"),
        ("Migrations without downtime", "postgres schema migrations that never lock a busy table"),
    ],
    "cooking": [
        ("Sourdough at home", "flour water salt and a lively starter make sourdough bread"),
        ("A quick tomato sauce", "tomatoes garlic olive oil and basil simmered for a sauce"),
        ("Roasting vegetables", "a hot oven olive oil and salt roast vegetables well"),
        ("Fresh pasta by hand", "flour and eggs kneaded into pasta dough with a rolling pin"),
        ("Baking crusty bread", "a hot oven and steam give bread a crisp crust"),
    ],
    "travel": [
        ("A week in Lisbon", "trams hills and the river make lisbon a city to walk"),
        ("Hiking the Alps", "alpine trails huts and mountain views for a summer hike"),
        ("Night trains of Europe", "sleeper trains cross europe from city to city overnight"),
        ("Packing light", "one bag for a week of travel by train and on foot"),
        ("Kyoto in autumn", "temples gardens and red maple leaves across the city"),
    ],
}


def demo_id(*names: str) -> str:
    """The request id (or embedding id) of one demo object: the same on every load."""
    return str(uuid.uuid5(DEMO_NAMESPACE, "/".join(names)))


def embed(text: str, dimension: int = DIMENSION) -> list[float]:
    """A unit vector for ``text``: the normalized sum of a fixed pseudo-random direction per word."""
    total = [0.0] * dimension
    for word in text.lower().split():
        for index, byte in enumerate(hashlib.shake_256(word.encode()).digest(dimension)):
            total[index] += byte - 127.5
    norm = math.sqrt(sum(value * value for value in total)) or 1.0
    return [value / norm for value in total]


@dataclass
class Loaded:
    """What a load made, for the summary a user reads to try the RPCs."""

    users: dict[str, str]
    contents: dict[str, str]
    session_token: str
    embeddings: int
    pgvector: bool


async def load_demo(channel: grpc.aio.Channel) -> Loaded:
    """Loads the demo data through ``channel``; safe to run again."""
    users = user_service_pb2_grpc.UserServiceStub(channel)
    contents = content_service_pb2_grpc.ContentServiceStub(channel)
    sessions = session_service_pb2_grpc.SessionServiceStub(channel)
    embeddings = embedding_service_pb2_grpc.EmbeddingServiceStub(channel)
    recommendations = recommendation_service_pb2_grpc.RecommendationServiceStub(channel)

    user_ids: dict[str, str] = {}
    for name, topic in USERS:
        created = await users.CreateUser(user_pb.CreateUserRequest(
            user=user_pb.User(email=f"{name}@example.com", display_name=name.title()),
            password=PASSWORD,
            request_id=demo_id("user", name),
        ))
        user_ids[name] = created.user.id
    session = await sessions.CreateSession(session_pb.CreateSessionRequest(
        session=session_pb.Session(user_id=user_ids["alice"], user_agent="demo")))

    content_ids: dict[str, str] = {}
    texts: dict[str, str] = {}
    authors = {topic: name for name, topic in USERS}
    for topic, entries in TOPICS.items():
        for title, body in entries:
            created = await contents.CreateContent(content_pb.CreateContentRequest(
                content=content_pb.Content(
                    author_id=user_ids[authors[topic]], title=title, body=body, tags=[topic, "demo"],
                    status=common_pb2.CONTENT_STATUS_PUBLISHED,
                ),
                request_id=demo_id("content", title),
            ))
            content_ids[title] = created.content.id
            texts[title] = f"{title} {body}"

    stored = await _load_embeddings(embeddings, content_ids, texts)
    for name, topic in USERS:
        first_title, second_title = (title for title, _ in TOPICS[topic][:2])
        for title, kind in ((first_title, recommendation_pb.INTERACTION_TYPE_LIKE),
                            (second_title, recommendation_pb.INTERACTION_TYPE_VIEW)):
            await recommendations.RecordInteraction(recommendation_pb.RecordInteractionRequest(
                user_id=user_ids[name], content_id=content_ids[title], type=kind,
                request_id=demo_id("interaction", name, title),
            ))
    await recommendations.RecordFeedback(recommendation_pb.RecordFeedbackRequest(
        user_id=user_ids["bob"], content_id=content_ids["Baking crusty bread"],
        feedback=recommendation_pb.RECOMMENDATION_FEEDBACK_REJECTED,
    ))
    await recommendations.PutRecommendations(recommendation_pb.PutRecommendationsRequest(
        user_id=user_ids["carol"],
        items=[recommendation_pb.RankedContent(content_id=content_ids["Kyoto in autumn"], score=0.97)],
    ))
    return Loaded(user_ids, content_ids, session.token, stored, pgvector=stored > 0)


async def _load_embeddings(
    embeddings: embedding_service_pb2_grpc.EmbeddingServiceStub, content_ids: dict[str, str], texts: dict[str, str]
) -> int:
    """The collection and one embedding per content; 0 when the service has no pgvector."""
    try:
        await embeddings.CreateCollection(embedding_pb.CreateCollectionRequest(
            collection=embedding_pb.Collection(
                name=COLLECTION, dimension=DIMENSION, distance_metric=embedding_pb.DISTANCE_METRIC_COSINE),
            request_id=demo_id("collection", COLLECTION),
        ))
    except grpc.aio.AioRpcError as error:
        if error.code() is grpc.StatusCode.FAILED_PRECONDITION:
            return 0
        if error.code() is not grpc.StatusCode.ALREADY_EXISTS:
            raise
    items = [
        embedding_pb.Embedding(
            id=demo_id("embedding", title), vector=embed(texts[title]), content_id=content_id, tags=["demo"]
        )
        for title, content_id in content_ids.items()
    ]
    response = await embeddings.UpsertEmbeddings(embedding_pb.UpsertEmbeddingsRequest(
        collection=COLLECTION, embeddings=items))
    return response.upserted_count


def summary(loaded: Loaded, target: str) -> str:
    """What was loaded, and a few calls to try it with."""
    alice = loaded.users["alice"]
    lines = [
        f"demo data loaded: {len(loaded.users)} users (password {PASSWORD!r}), {len(loaded.contents)} contents, "
        f"{loaded.embeddings} embeddings in collection {COLLECTION!r}"
        + ("" if loaded.pgvector else " (none: this PostgreSQL has no pgvector)"),
        f"alice's user id: {alice}",
        f"a session token of alice's: {loaded.session_token}",
        "try:",
        f"  .venv/bin/grpcurl -plaintext -d '{{\"id\": \"{alice}\"}}' {target} dataservice.v1.UserService/GetUser",
        f"  .venv/bin/grpcurl -plaintext -d '{{\"query\": \"postgres\"}}' {target}"
        " dataservice.v1.ContentService/SearchContents",
        f"  .venv/bin/grpcurl -plaintext -d '{{\"userId\": \"{alice}\"}}' {target}"
        " dataservice.v1.RecommendationService/GetRecommendations",
    ]
    if loaded.pgvector:
        lines.append(
            f"  .venv/bin/grpcurl -plaintext -d '{{\"collection\": \"{COLLECTION}\","
            f" \"itemId\": \"{demo_id('embedding', 'Vector search with pgvector')}\", \"topK\": 3}}' {target}"
            " dataservice.v1.EmbeddingService/SearchEmbeddings"
        )
    return "\n".join(lines)
