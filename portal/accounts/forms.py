"""Forms of the account pages: sign-up, log-in that explains a pending account, profile."""

from __future__ import annotations

import unicodedata

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from jobs import notifications
from jobs.models import Institution
from jobs.selftest import SYSTEM_USERNAME
from portal.accounts.usernames import canonical, find_user


class SignUpForm(forms.Form):
    username = forms.RegexField(r"^[\w.@+-]+\Z", max_length=150, help_text="Letters, digits and @ . + - _",
                                error_messages={"invalid": "Use only letters, digits and @ . + - _"})
    email = forms.EmailField(help_text="We write to you here when your account is approved.")
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    institution = forms.ModelChoiceField(Institution.objects.order_by("name"), required=False,
                                         empty_label="— none / not listed —",
                                         help_text="Its admins can approve you; otherwise the Locus staff do.")
    note = forms.CharField(max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 2}),
                           label="Note to the approver", help_text="Your lab, what you want to analyse.")
    password1 = forms.CharField(label="Password", strip=False, widget=forms.PasswordInput,
                                help_text="At least 8 characters, not only digits, not a common password.")
    password2 = forms.CharField(label="Password again", strip=False, widget=forms.PasswordInput)

    def clean_username(self):
        name = unicodedata.normalize("NFKC", self.cleaned_data["username"])  # as Django stores it
        if find_user(name) is not None or canonical(name) == canonical(SYSTEM_USERNAME):
            raise ValidationError("This username is taken.")
        return name

    def clean_email(self):
        email = self.cleaned_data["email"]
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise ValidationError("An account with this email exists; use “Forgot your password?”.")
        return email

    def clean(self):
        data = super().clean()
        p1, p2 = data.get("password1"), data.get("password2")
        if p1 and p2 and p1 != p2:
            self.add_error("password2", "The two passwords differ.")
        elif p1:
            user = get_user_model()(username=data.get("username", ""), email=data.get("email", ""),
                                    first_name=data.get("first_name", ""), last_name=data.get("last_name", ""))
            try:
                password_validation.validate_password(p1, user)
            except ValidationError as exc:
                self.add_error("password1", exc)
        return data


class LoginForm(AuthenticationForm):
    """Django's log-in form, telling a pending account that it waits for approval (only once the password
    is right, so that it does not reveal which usernames exist)."""

    def clean(self):
        try:
            return super().clean()
        except ValidationError:
            username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
            user = find_user(username)
            if user is not None and not user.is_active and password and user.check_password(password):
                profile = getattr(user, "profile", None)
                if profile is not None and profile.is_pending:
                    raise ValidationError("Your account is waiting for approval; we will email you.",
                                          code="pending") from None
            raise


class ProfileForm(forms.Form):
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    email = forms.EmailField()
    notify = forms.ChoiceField(choices=notifications.profile_choices,
                               widget=forms.RadioSelect, label="Job notifications",
                               help_text="The default for new jobs; each job can choose otherwise.")
