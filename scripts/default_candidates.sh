# The candidates of the default checkpoint (sourced by train_default_checkpoint.sh and comparison.sh, whose `shipped`
# row is that model): per task one GL-net with base-model probes and anchors and one MLP+SVD (singular values: they
# carry quality), and for the three data attributes also MLP+Dense, whose first layer is trained as rank-16 factors
# per hidden unit and module (low_rank=16: ~12x cheaper per step than the dense layer; docs/models.md).
# SHIPPED_ARGS: `--blend 4`, per task a weighted average of the candidates weighed on held-out training adapters,
# then each kept candidate refit on all of them; `--ensemble`: for membership, gloss length and POS mix each kept
# candidate is trained with 3 seeds and averaged (where a seed average measurably helps: docs/models.md).
PROBES=${PROBES:-data/minilm-wordnet-probes.safetensors}
GLNET_CANDIDATE="glnet:unit_norm=true,hidden=8,anchors=64,equiv_dropout=0.2,probes=$PROBES"
DENSE_CANDIDATE="mlp_dense:unit_norm=true,head_hidden=32,low_rank=16,epochs=40,patience=8,tasks=noise+gloss_length+pos_mix"
SVD_CANDIDATE="mlp_svd:unit_norm=true"
DEFAULT_CANDIDATES="$GLNET_CANDIDATE;$DENSE_CANDIDATE;$SVD_CANDIDATE"
SHIPPED_ARGS="--model auto --blend 4 --ensemble membership=3,gloss_length=3,pos_mix=3"
