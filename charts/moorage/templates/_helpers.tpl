{{/* A moorage image: <global.imageRegistry>/<repository>:<global.imageTag or appVersion>.
     Called with (list $ "server"). Shared by the sub-charts: named templates are global. */}}
{{- define "moorage.image" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $g := $root.Values.global -}}
{{- $repo := index $g.images $name -}}
{{- $tag := $g.imageTag | default $root.Chart.AppVersion -}}
{{- if $g.imageRegistry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $g.imageRegistry) $repo $tag -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{- define "moorage.labels" -}}
app.kubernetes.io/part-of: moorage
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "moorage.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}
