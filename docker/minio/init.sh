#!/bin/sh
# minio-init (docker-compose.yml): buckets and the application's own S3 user, idempotently, on every
# `docker compose up` (runs in the minio/mc image; POSIX sh).
#
#   buckets  $HURREN_S3_BUCKET_REPORTS, $HURREN_S3_BUCKET_DOCS (the same names scripts/services creates)
#   user     $HURREN_S3_ACCESS_KEY / $HURREN_S3_SECRET_KEY: what Airflow logs in with; may read, write
#            and delete objects in those two buckets only (policy hurren-app). The MinIO root
#            account ($MINIO_ROOT_USER) is for this script and for administrators, never for Airflow.
#
# A changed HURREN_S3_SECRET_KEY is applied on the next `up` (mc admin user add sets the secret).
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${HURREN_S3_ACCESS_KEY:?}" "${HURREN_S3_SECRET_KEY:?}"
: "${HURREN_S3_BUCKET_REPORTS:?}" "${HURREN_S3_BUCKET_DOCS:?}"
endpoint=${MINIO_ENDPOINT:-http://minio:9000}
policy_name=hurren-app

i=0
until mc alias set stack "$endpoint" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -ge 60 ]; then
    mc alias set stack "$endpoint" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"  # shows the error
    exit 1
  fi
  sleep 1
done

for bucket in "$HURREN_S3_BUCKET_REPORTS" "$HURREN_S3_BUCKET_DOCS"; do
  mc mb --ignore-existing "stack/$bucket"
done

policy_file=/tmp/hurren-app-policy.json  # the mc image is minimal: no mktemp or grep relied on
cat >"$policy_file" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:ListAllMyBuckets"], "Resource": ["arn:aws:s3:::*"]},
    {"Effect": "Allow",
     "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
     "Resource": ["arn:aws:s3:::$HURREN_S3_BUCKET_REPORTS", "arn:aws:s3:::$HURREN_S3_BUCKET_DOCS"]},
    {"Effect": "Allow",
     "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
     "Resource": ["arn:aws:s3:::$HURREN_S3_BUCKET_REPORTS/*", "arn:aws:s3:::$HURREN_S3_BUCKET_DOCS/*"]}
  ]
}
JSON
mc admin policy create stack "$policy_name" "$policy_file" >/dev/null
rm -f "$policy_file"

mc admin user add stack "$HURREN_S3_ACCESS_KEY" "$HURREN_S3_SECRET_KEY" >/dev/null
# attach answers with an error when the policy is attached already: that is success here
if ! out=$(mc admin policy attach stack "$policy_name" --user "$HURREN_S3_ACCESS_KEY" 2>&1); then
  case $(mc admin user info stack "$HURREN_S3_ACCESS_KEY" 2>&1) in
    *"$policy_name"*) ;;
    *)
      printf '%s\n' "$out" >&2
      exit 1
      ;;
  esac
fi
echo "minio-init: buckets $HURREN_S3_BUCKET_REPORTS, $HURREN_S3_BUCKET_DOCS and user $HURREN_S3_ACCESS_KEY (policy $policy_name) in place"
