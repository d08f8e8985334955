-- Reverts 0007_recommendations.
DROP TABLE precomputed_recommendations;
DROP TABLE recommendation_feedback;
DROP MATERIALIZED VIEW content_popularity;
DROP TABLE interactions;
DROP FUNCTION record_recommendations_invalidation();
