{{/* Checks across keys that values.schema.json cannot express. `helm template/install/upgrade` fail
     with the message (`helm lint` only reports it, as INFO "funcMap fail"). */}}
{{- define "sm1km.validate" -}}
{{- $v := .Values }}
{{- if and $v.autoscaler.enabled (gt (int $v.autoscaler.minimum) (int $v.autoscaler.maximum)) }}
{{- fail (printf "autoscaler.minimum (%d) is larger than autoscaler.maximum (%d)" (int $v.autoscaler.minimum) (int $v.autoscaler.maximum)) }}
{{- end }}
{{- end }}
