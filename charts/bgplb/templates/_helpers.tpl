{{/* The chart's name: "bgplb" unless nameOverride (the app.kubernetes.io/name label). */}}
{{- define "bgplb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/*
Prefix of every resource name: the name, not prefixed with the release name,
so that the chart's objects have the same names as dist/install.yaml's
(bgplb-controller, bgplb-speaker); fullnameOverride replaces it.
*/}}
{{- define "bgplb.fullname" -}}
{{- default (include "bgplb.name" .) .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "bgplb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "bgplb.labels" -}}
helm.sh/chart: {{ include "bgplb.chart" . }}
app.kubernetes.io/name: {{ include "bgplb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: bgplb
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one component: include "bgplb.selectorLabels" (list . "controller") */}}
{{- define "bgplb.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "bgplb.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The image: repository@digest when image.digest is set (it wins over the tag), else repository:tag. */}}
{{- define "bgplb.image" -}}
{{- $img := index .root.Values .component "image" -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The service account a component runs as: include "bgplb.serviceAccountName" (list . "controller").
Created by the chart: <fullname>-<component> unless named. Not created: the
named one, or the namespace's "default".
*/}}
{{- define "bgplb.serviceAccountName" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $sa := (index $root.Values $component).serviceAccount -}}
{{- if $sa.create -}}
{{- default (printf "%s-%s" (include "bgplb.fullname" $root) $component) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* The log level of a component: its own logLevel, else the chart-wide one. */}}
{{- define "bgplb.logLevel" -}}
{{- $root := index . 0 -}}
{{- default $root.Values.logLevel (index $root.Values (index . 1)).logLevel -}}
{{- end -}}

{{/*
The YAML documents of a file in files/ (controller-gen writes several,
separated by "---"), as a list of dicts; empty documents are dropped.
*/}}
{{- define "bgplb.docs" -}}
{{- $root := index . 0 -}}
{{- $docs := list -}}
{{- range regexSplit "(?m)^---[ \t]*$" ($root.Files.Get (index . 1)) -1 -}}
{{- $d := fromYaml . -}}
{{- if and $d $d.kind -}}
{{- $docs = append $docs $d -}}
{{- end -}}
{{- end -}}
{{- toJson $docs -}}
{{- end -}}
