<#
.SYNOPSIS
  Installs the LLM Router agent for the current user, offline, from the wheels beside this script.

.DESCRIPTION
  Finds CPython 3.11-3.13 (64-bit) through the PythonCore registry keys (PEP 514) or the py
  launcher, creates a virtualenv at <InstallDir>\venv, installs the agent into it with
  `pip install --no-index --find-links wheels` (nothing is downloaded), registers "start at
  login" (the HKCU Run value LLMRouterAgent, the same one the tray's menu toggles) and starts the
  tray agent. The MSI runs this script as a custom action (with -NoAutostart: the MSI writes the
  Run value itself) and runs it with -Uninstall on removal.

.EXAMPLE
  powershell -ExecutionPolicy Bypass -File install.ps1
  powershell -ExecutionPolicy Bypass -File install.ps1 -Uninstall
#>
[CmdletBinding()]
param(
  [string]$InstallDir = (Join-Path $env:LOCALAPPDATA 'Programs\LLM Router Agent'),
  [string]$Python = '',
  [switch]$NoAutostart,
  [switch]$NoStart,
  [switch]$Uninstall
)

$ErrorActionPreference = 'Stop'
$InstallDir = [System.IO.Path]::GetFullPath($InstallDir.TrimEnd('.').TrimEnd('\'))
$Venv = Join-Path $InstallDir 'venv'
$VenvPython = Join-Path $Venv 'Scripts\python.exe'
$VenvPythonw = Join-Path $Venv 'Scripts\pythonw.exe'
$Wheels = Join-Path $PSScriptRoot 'wheels'
$Supported = @('3.13', '3.12', '3.11')

function Stop-Agent {
  # Agents started from this virtualenv (the tray, or one started at login).
  Get-Process -Name python, pythonw -ErrorAction SilentlyContinue |
    Where-Object { $_.Path -and $_.Path.StartsWith($Venv, [System.StringComparison]::OrdinalIgnoreCase) } |
    Stop-Process -Force -ErrorAction SilentlyContinue
}

function Find-Python {
  if ($Python) { return $Python }
  foreach ($version in $Supported) {
    foreach ($root in @('HKCU:', 'HKLM:')) {
      $key = "$root\Software\Python\PythonCore\$version\InstallPath"
      $item = Get-ItemProperty -Path $key -ErrorAction SilentlyContinue
      if ($item -and $item.ExecutablePath -and (Test-Path $item.ExecutablePath)) {
        return $item.ExecutablePath
      }
      if ($item -and $item.'(default)') {
        $candidate = Join-Path $item.'(default)' 'python.exe'
        if (Test-Path $candidate) { return $candidate }
      }
    }
  }
  $launcher = Get-Command py.exe -ErrorAction SilentlyContinue
  if ($launcher) {
    foreach ($version in $Supported) {
      try {
        $exe = & $launcher.Source "-$version" -c 'import sys; print(sys.executable)' 2>$null
        if ($LASTEXITCODE -eq 0 -and $exe) { return $exe.Trim() }
      } catch {
        # Windows PowerShell turns a native command's stderr into an error: not this version.
      }
    }
  }
  throw 'LLM Router Agent needs Python 3.11, 3.12 or 3.13 (64-bit): install it from https://www.python.org/downloads/windows/ and run this again.'
}

function Invoke-Checked([string]$Exe, [string[]]$Arguments) {
  & $Exe @Arguments
  if ($LASTEXITCODE -ne 0) { throw "$Exe $($Arguments -join ' ') failed with exit code $LASTEXITCODE" }
}

if ($Uninstall) {
  Stop-Agent
  if (Test-Path $VenvPython) {
    try { & $VenvPython -m agent --autostart disable | Out-Null } catch { }
  }
  if (Test-Path $Venv) { Remove-Item -Recurse -Force $Venv }
  Write-Host "LLM Router Agent removed from $InstallDir"
  exit 0
}

$exe = Find-Python
# No double quotes inside -c: Windows PowerShell 5.1 does not escape them for native commands.
$version = (& $exe -c 'import sys; print(sys.version_info[0], sys.version_info[1], sep=chr(46))').Trim()
if ($Supported -notcontains $version) {
  throw "Python $version at $exe is not supported: this package carries wheels for 3.11, 3.12 and 3.13."
}
$bits = (& $exe -c 'import sys; print(64 if sys.maxsize > 2**32 else 32)').Trim()
if ($bits -ne '64') { throw "Python at $exe is $bits-bit: the bundled wheels are for 64-bit Python." }

New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
Stop-Agent
Write-Host "Creating $Venv with Python $version ($exe)"
Invoke-Checked $exe @('-m', 'venv', '--clear', $Venv)
Invoke-Checked $VenvPython @('-m', 'pip', 'install', '--no-index', '--find-links', $Wheels, '--disable-pip-version-check', 'llm-router')

if (-not $NoAutostart) {
  Invoke-Checked $VenvPython @('-m', 'agent', '--autostart', 'enable')
}
if (-not $NoStart) {
  Start-Process -FilePath $VenvPythonw -ArgumentList @('-m', 'agent') -WorkingDirectory $InstallDir
  Write-Host 'The tray agent is running: right-click its icon for Settings (router URL, node name).'
}
Write-Host "LLM Router Agent installed in $InstallDir"
