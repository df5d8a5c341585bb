{{/* Labels of every object. */}}
{{- define "weft.labels" -}}
app.kubernetes.io/name: weft
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: weft
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Labels that select the control plane's pods. */}}
{{- define "weft.selectorLabels" -}}
app.kubernetes.io/name: weft
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: control-plane
{{- end }}

{{- define "weft.cpImage" -}}
{{ .Values.controlPlane.image.repository }}:{{ .Values.controlPlane.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "weft.proxyImage" -}}
{{ .Values.proxy.image.repository }}:{{ .Values.proxy.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Namespaces the webhook never sees: the configured ones and the release's. */}}
{{- define "weft.excludedNamespaces" -}}
{{- $ns := .Values.injector.excludedNamespaces | default list -}}
{{- if not (has .Release.Namespace $ns) }}{{ $ns = append $ns .Release.Namespace }}{{ end -}}
{{- toJson $ns -}}
{{- end }}
