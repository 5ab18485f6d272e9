"""Every name bridge shares with another program or another part of itself (pure).

Registry tag keys, run tag keys (the KFP lineage the components write and
`bridge status` reads), Kubernetes label and annotation keys, the marker file
name and the default aliases. Writers and readers import them from here, so a
key cannot be spelled one way by the writer and another by the reader.
"""

from __future__ import annotations

# --- Registry aliases (defaults of BRIDGE_ALIAS / BRIDGE_CANARY_ALIAS) -------------
DEFAULT_ALIAS = "champion"
DEFAULT_CANARY_ALIAS = "challenger"

# --- Registered-model tags bridge reads (serving overrides) and writes (bookkeeping) -
TAG_PREFIX = "bridge."
HISTORY_TAG = TAG_PREFIX + "history"
LOCK_TAG = TAG_PREFIX + "lock"
ROLLOUT_TAG = TAG_PREFIX + "rollout"
ROLLOUT_STEPS_TAG = TAG_PREFIX + "rollout-steps"
ROLLOUT_BAKE_TAG = TAG_PREFIX + "rollout-bake"
CANARY_TRAFFIC_TAG = TAG_PREFIX + "canary-traffic-percent"

# --- Model-version / run tags the KFP components write ------------------------------
SOURCE_RUN_TAG = TAG_PREFIX + "source_run_id"
# On the register task's own run under KFP's MLflow integration: the version it registered.
REGISTERED_VERSION_TAG = TAG_PREFIX + "registered_model_version"
KFP_FAILURE_TAG = TAG_PREFIX + "kfp.failure"
KFP_TAG_PREFIX = "kfp."
KFP_PIPELINE_NAME_TAG = KFP_TAG_PREFIX + "pipeline_name"
KFP_RUN_ID_TAG = KFP_TAG_PREFIX + "run_id"  # the KFP pipeline run (job) uuid
KFP_RUN_NAME_TAG = KFP_TAG_PREFIX + "run_name"
KFP_TASK_NAME_TAG = KFP_TAG_PREFIX + "task_name"
KFP_POD_NAME_TAG = KFP_TAG_PREFIX + "pod_name"
KFP_COMPONENT_TAG = KFP_TAG_PREFIX + "component"
KFP_COMPONENT_VERSION_TAG = KFP_TAG_PREFIX + "component_version"

# --- Kubernetes labels and annotations on the objects bridge writes -----------------
MANAGED_BY = "mlflow-kubeflow-bridge"  # value of MANAGED_BY_LABEL, field manager
ANNOTATION_PREFIX = "mlflow-kubeflow-bridge.io/"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PART_OF_LABEL = "app.kubernetes.io/part-of"
# Lineage annotations on an InferenceService: ANNOTATION_PREFIX + [CANARY_PREFIX +] suffix
# (written by bridge.serving, read back by bridge.status and the first-deploy check).
VERSION_SUFFIX = "version"
ALIAS_SUFFIX = "alias"
SOURCE_URI_SUFFIX = "source-uri"
CONTENT_DIGEST_SUFFIX = "content-digest"
STORAGE_URI_SUFFIX = "storage-uri"
REGISTERED_MODEL_SUFFIX = "registered-model"
RUN_ID_SUFFIX = "run-id"
CANARY_PREFIX = "canary-"
CANARY_STATE_SUFFIX = "canary-state"
CANARY_STATE_ANNOTATION = ANNOTATION_PREFIX + CANARY_STATE_SUFFIX
LEADER_URL_ANNOTATION = ANNOTATION_PREFIX + "leader-url"  # on the leader-election Lease
# KServe's own keys bridge sets.
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
S3_ANNOTATION_PREFIX = "serving.kserve.io/s3-"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"

# --- The store ---------------------------------------------------------------------
# Written last into a published version's prefix: its presence means "complete".
MARKER_NAME = ".bridge-manifest.json"
